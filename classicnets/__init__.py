"""classicnets: the classic convolutional networks, faithful, runnable and understandable."""
