"""pydantic models of the file formats exactly as users write them."""
