"""Files: scenario and topology files in, simulation outputs (CSV, JSON) out."""
