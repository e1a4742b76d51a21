"""Versioned model state and student weights (teacher training, distillation, hot swap).

Empty until the teacher/student issue lands; the ranker state is kept in Redis meanwhile
(see ``streamrec.online_models.shared_state``)."""
