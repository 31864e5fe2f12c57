"""``medai view``: MedAI results reviewed in a browser, served by trame-slicer from Slicer's own MRML (headless)."""
