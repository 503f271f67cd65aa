"""Packaging for FC: `make package` (python -m infra.package build). See README "Deploying"."""
