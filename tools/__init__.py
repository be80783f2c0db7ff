"""Tools for the people who maintain Vigie (not run by the system): `python -m tools.<name>`."""
