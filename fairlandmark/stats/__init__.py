"""Statistics: the vectorised kernel, permutation/bootstrap significance, folds and privacy."""
