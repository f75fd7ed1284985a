"""The library behind the Mage project: every piece of pipeline logic, importable and tested."""
