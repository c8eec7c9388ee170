{
  description = "deploy-flake: deploy a flake's NixOS configurations over SSH, with rollback enforced on the host";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: rec {
        deploy-flake = pkgs.python3Packages.buildPythonApplication {
          pname = "deploy-flake";
          version = "0.1.0";
          pyproject = true;
          src = pkgs.lib.cleanSource ./.;
          build-system = [ pkgs.python3Packages.setuptools ];
          dependencies = with pkgs.python3Packages; [ click rich ];
          # deploy-flake runs OpenSSH and Nix; the user's own come first in PATH
          makeWrapperArgs = [ "--suffix" "PATH" ":" (pkgs.lib.makeBinPath [ pkgs.openssh pkgs.nix ]) ];
          meta = {
            description = "Deploy a Nix flake to NixOS hosts over SSH, with automatic rollback and lockout protection";
            mainProgram = "deploy-flake";
          };
        };
        default = deploy-flake;
      });

      apps = forAllSystems (pkgs: {
        deploy-flake = {
          type = "app";
          program = "${self.packages.${pkgs.system}.deploy-flake}/bin/deploy-flake";
        };
        default = self.apps.${pkgs.system}.deploy-flake;
      });
    };
}
