"""Training: a generic resumable loop (:mod:`.loop`) and one task module per learned method (:mod:`.residual`...)."""
