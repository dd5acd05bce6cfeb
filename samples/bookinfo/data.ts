/**
 * The one book Bookinfo knows, and the JSON shapes its services exchange. Field names, key order, reviewer
 * names and values are the upstream API (clients and routing tests read them); only the product description
 * prose is our own.
 */

export interface Product {
  readonly id: number;
  readonly title: string;
  readonly descriptionHtml: string;
}

export const PRODUCTS: readonly Product[] = [
  {
    id: 0,
    title: 'The Comedy of Errors',
    descriptionHtml:
      '<a href="https://en.wikipedia.org/wiki/The_Comedy_of_Errors">Wikipedia Summary</a>: an early comedy by ' +
      '<b>William Shakespeare</b> in which two sets of identical twins, parted as infants, turn up in the same ' +
      'town on the same day, and every mistaken identity that follows is played for laughs.',
  },
];

/** details' answer for `/details/<id>`, keys in upstream's order. */
export function bookDetails(id: number) {
  return {
    id,
    author: 'William Shakespeare',
    year: 1595,
    type: 'paperback',
    pages: 200,
    publisher: 'PublisherA',
    language: 'English',
    'ISBN-10': '1234567890',
    'ISBN-13': '123-1234567890',
  };
}

/** The two reviewers; ratings keys them by these names. */
export const REVIEWS = [
  {
    reviewer: 'Reviewer1',
    text: 'An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!',
  },
  {
    reviewer: 'Reviewer2',
    text: 'Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare.',
  },
] as const;

/** ratings' default answer. */
export const DEFAULT_RATINGS: Readonly<Record<string, number>> = { Reviewer1: 5, Reviewer2: 4 };

/** What reviews puts in place of a rating when ratings could not be reached (the page shows it). */
export const RATINGS_UNAVAILABLE = 'Ratings service is currently unavailable';

export type Rating = { readonly stars: number; readonly color: string } | { readonly error: string };

export interface ReviewsResponse {
  readonly id: string;
  readonly podname: string;
  readonly clustername: string;
  readonly reviews: ReadonlyArray<{
    readonly reviewer: string;
    readonly text: string;
    readonly rating?: Rating;
  }>;
}

/** productpage's failure texts (the acceptance tests match them exactly). */
export const DETAILS_UNAVAILABLE = 'Sorry, product details are currently unavailable for this book.';
export const REVIEWS_UNAVAILABLE = 'Sorry, product reviews are currently unavailable for this book.';
export const PRODUCT_RATINGS_UNAVAILABLE = 'Sorry, product ratings are currently unavailable for this book.';
