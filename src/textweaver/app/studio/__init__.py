"""The studio: a local web app that trains, watches, compares and publishes runs."""
