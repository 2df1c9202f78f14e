"""Prompts: the voice and scene libraries, text preparation and chunking, and the plan of every prompt mode."""
