"""pytester for the plugin tests: real pytest runs of small test files."""

pytest_plugins = ["pytester"]
