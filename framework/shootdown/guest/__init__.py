"""shootdown.guest"""
