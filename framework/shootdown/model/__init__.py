"""shootdown.model"""
