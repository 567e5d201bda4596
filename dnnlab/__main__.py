from dnnlab.cli import main

main()
