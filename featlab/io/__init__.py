"""Reading and writing: images, HDF5 features/matches in hloc's layout, pair lists, atomic writes."""
