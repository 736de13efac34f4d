"""Routing decisions: request features (`features`), runtime snapshot (`state`) and the pure `decide`."""
