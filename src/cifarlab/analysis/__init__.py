"""Looking inside a trained network: filters, feature maps, attribution, error metrics, loss
landscapes, Hessian spectra (and the batch-norm probes). Each analysis has one entry function
run_<name>(model, ..., out_dir) -> dict that writes figures (PNG) and arrays (.npz)."""
