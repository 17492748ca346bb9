"""shootdown.remote"""
