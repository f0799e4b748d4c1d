"""Offline task builders."""
