"""The public auth listener: body checks and limits in front of the backend's e-mail sign-in routes."""
