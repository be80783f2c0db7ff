"""Vigie: live anomaly detection for sensor streams. All logic lives here; workers/ and app.py are shells."""
