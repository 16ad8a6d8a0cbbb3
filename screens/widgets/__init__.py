"""Widgets shared by the screens. They only display what they are given: reading files,
NVML or processes happens in the screens' workers, which hand the results over."""
