from tests.data.conftest import store_db, tok_path  # noqa: F401  (shared session fixtures)
