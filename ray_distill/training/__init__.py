"""Student SFT without Ray: examples and loss masks, packing, data order, the training loop and its
engines, attention paths, loss kernels, the memory model and sizing, optimizer and export. The Ray
Train glue around the loop is `ray_distill.distributed.training`."""
