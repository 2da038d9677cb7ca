"""mmbench's built-in plugins, registered through the same `mmbench` entry points a third party uses."""
