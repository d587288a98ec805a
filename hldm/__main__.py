from hldm.cli import main

raise SystemExit(main())
