from tests.data.conftest import store_db, tok_path  # noqa: F401
from tests.serve.conftest import model_dir  # noqa: F401
