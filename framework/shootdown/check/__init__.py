"""shootdown.check"""
