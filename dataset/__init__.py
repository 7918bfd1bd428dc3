"""Long-tailed semi-supervised datasets: splits, file readers and augmentation."""
