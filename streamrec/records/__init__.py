"""What travels on the topics: event records and their validation, topic names, dead letters,
and the errors that stop a worker. Imports nothing else of the project."""
