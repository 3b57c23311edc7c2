"""fulfill"""
