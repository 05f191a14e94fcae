"""`sdbake watch`: re-render a recipe on every save, optionally with a live page on loopback."""
