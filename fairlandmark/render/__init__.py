"""Rendering: terminal tables, Markdown, HTML and figures. Reads audit documents; computes nothing new."""
