"""The admin API, served on the admin listener only."""
