"""shootdown.trace"""
