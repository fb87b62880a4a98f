"""The adversarial catalogue: hostile inputs at every edge, each with the exact answer weir must give."""
