from platform_fixtures import db_url, platform, sqlite_platform  # noqa: F401 - pytest fixtures
