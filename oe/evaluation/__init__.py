"""Zero-shot multiple-choice evaluation: the tasks and the log-likelihood scorer."""
