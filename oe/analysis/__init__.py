"""Reading runs back: curves, sweep reports, the memory plan of a sharded model, n-gram counting."""
