"""Student SFT, the pure parts: examples and loss masks, packing, data order, optimizer and
export. The Ray Train loop that uses them is `ray_distill.distributed.training`."""
