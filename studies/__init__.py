"""Studies: recipes that compose the library's parts into experiments (a transfer study across
embodiments, ...). Like the entry scripts, they import `dexwm`; nothing in `dexwm` imports them."""
