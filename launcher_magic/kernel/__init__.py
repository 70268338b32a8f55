"""What runs in the notebook kernel: the magics, the launch service, the job panel, VisualDL boards."""
