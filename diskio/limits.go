package diskio

// Limits of the simulated disk.
const (
	// pageBytes is the unit in which a crash keeps, drops or tears unsynced
	// data: the page cache's page.
	pageBytes = 4096
	// sectorBytes is the unit a torn page is torn at: the device promises
	// only that one sector is written atomically.
	sectorBytes = 512
	// sectorsPerPage is how many sectors make one page.
	sectorsPerPage = pageBytes / sectorBytes
	// fileBytesMax bounds a Sim file, so that a stray offset fails with
	// EFBIG instead of exhausting memory.
	fileBytesMax = 1 << 32
	// dirOpsPendingMax bounds the directory changes waiting for a SyncDir.
	// A caller that reaches it never syncs its directories, which is a bug
	// the Sim reports by panicking.
	dirOpsPendingMax = 1 << 16
	// describeContentBytesMax is the largest file Describe prints in full;
	// larger files are shown by checksum.
	describeContentBytesMax = 32
	// ppmMax is one million parts per million: certainty.
	ppmMax = 1_000_000
)

const _ = uint(0 - pageBytes%sectorBytes) // a page is whole sectors
const _ = uint(fileBytesMax - pageBytes)  // a file holds at least a page
