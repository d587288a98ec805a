"""Data: CirCor loader, windows, and the physiological PCG simulator."""
