"""Reports: the HTML/SVG report of a simulation."""
