"""The OLP roles: pure role logic (prompts, parsers, rules) and the Faust agents around it."""
