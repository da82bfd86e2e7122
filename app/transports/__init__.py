"""Transports: thin adapters that move a `StreamSession`'s events over one wire protocol."""
