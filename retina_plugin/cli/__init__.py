"""The command-line tools' logic, one module per tool; tools/<name>.py runs its `main`."""
