import warnings

import dagster as dg

# the loopback fake exchange fixtures (fake_exchange, market_bars) for every test module
pytest_plugins = ["meta_pipeline_tests.fake_exchange"]

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
