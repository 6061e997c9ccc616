"""Finding passages: dense and lexical search, fusion, diversity and calibrated scores."""
