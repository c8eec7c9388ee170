from deploy_flake.cli import main

main()
