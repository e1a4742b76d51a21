"""Training off the stream: the teacher, the student distilled from it, the training log read
back from Kafka or a file, and the trainer's rounds that publish snapshots."""
