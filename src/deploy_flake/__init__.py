"""deploy-flake: deploy a Nix flake's NixOS configurations to hosts over SSH."""

__version__ = "0.1.0"
